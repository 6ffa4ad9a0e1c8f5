#!/usr/bin/env python3
"""A minimal CRI (runtime.v1) client for containerd's CRI plugin, for recording what a pod's
sandbox and container look like to the OCI runtime (no crictl in Debian 12).

  python3 -m venv V && V/bin/pip install grpcio-tools
  V/bin/python -m grpc_tools.protoc -I DIR --python_out=OUT --grpc_python_out=OUT DIR/api.proto
      (api.proto: the CRI v1 proto, e.g. proto/v1.proto of the k8s-cri crate's source)
  PYTHONPATH=OUT V/bin/python scripts/oci-cri-client.py SOCKET CGROUP_PARENT HANDLER IMAGE [--netns]

Runs one pod (hostNetwork unless --netns, which needs a CNI config) with runtime handler HANDLER and
cgroup parent CGROUP_PARENT, one container of IMAGE in it that echoes and sleeps, an ExecSync in it,
then stops and removes both. Prints each step. Talks only to the local unix socket.
The pod's log directory is HYBOX_CRI_LOG_DIR (default: a temp dir, removed at the end).
"""
import os
import shutil
import sys
import tempfile
import time

import grpc

import api_pb2 as cri
import api_pb2_grpc as cri_grpc


def main():
    sock, parent, handler, image = sys.argv[1:5]
    netns = "--netns" in sys.argv[5:]
    ch = grpc.insecure_channel("unix://" + sock)
    rt = cri_grpc.RuntimeServiceStub(ch)
    im = cri_grpc.ImageServiceStub(ch)
    v = rt.Version(cri.VersionRequest(version="v1"))
    print("version:", v.runtime_name, v.runtime_version, v.runtime_api_version)
    print("images:", [i.repo_tags for i in im.ListImages(cri.ListImagesRequest()).images])

    log_dir = os.environ.get("HYBOX_CRI_LOG_DIR")
    own_log_dir = log_dir is None
    if own_log_dir:
        log_dir = tempfile.mkdtemp(prefix="hybox-cri-logs-")
    try:
        run_pod(rt, netns, parent, handler, image, log_dir)
    finally:
        if own_log_dir:
            shutil.rmtree(log_dir, ignore_errors=True)


def run_pod(rt, netns, parent, handler, image, log_dir):
    ns_mode = cri.POD if netns else cri.NODE
    pod = cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name="rec", uid="rec-uid-1", namespace="default", attempt=0),
        hostname="rec-pod" if netns else "",  # a host-network pod shares the host UTS namespace
        log_directory=log_dir,
        labels={"app": "rec"},
        linux=cri.LinuxPodSandboxConfig(
            cgroup_parent=parent,
            security_context=cri.LinuxSandboxSecurityContext(
                namespace_options=cri.NamespaceOption(network=ns_mode, pid=cri.POD, ipc=cri.POD),
            ),
        ),
    )
    t = time.time()
    pod_id = rt.RunPodSandbox(cri.RunPodSandboxRequest(config=pod, runtime_handler=handler)).pod_sandbox_id
    print("RunPodSandbox: %s (%.0f ms)" % (pod_id, (time.time() - t) * 1000))

    ctr = cri.ContainerConfig(
        metadata=cri.ContainerMetadata(name="app", attempt=0),
        image=cri.ImageSpec(image=image),
        command=["/bin/sh", "-c", "echo hello from cri; exec sleep 1000"],
        envs=[cri.KeyValue(key="FOO", value="bar")],
        log_path="app.log",
        linux=cri.LinuxContainerConfig(
            resources=cri.LinuxContainerResources(memory_limit_in_bytes=64 << 20, cpu_period=100000, cpu_quota=50000, oom_score_adj=500),
            security_context=cri.LinuxContainerSecurityContext(
                namespace_options=cri.NamespaceOption(network=ns_mode, pid=cri.CONTAINER, ipc=cri.POD),
            ),
        ),
    )
    t = time.time()
    cid = rt.CreateContainer(cri.CreateContainerRequest(pod_sandbox_id=pod_id, config=ctr, sandbox_config=pod)).container_id
    rt.StartContainer(cri.StartContainerRequest(container_id=cid))
    print("CreateContainer+StartContainer: %s (%.0f ms)" % (cid, (time.time() - t) * 1000))
    r = rt.ExecSync(cri.ExecSyncRequest(container_id=cid, cmd=["/bin/echo", "exec-sync"], timeout=10))
    print("ExecSync:", r.exit_code, r.stdout)
    rt.UpdateContainerResources(cri.UpdateContainerResourcesRequest(
        container_id=cid, linux=cri.LinuxContainerResources(memory_limit_in_bytes=128 << 20, cpu_period=100000, cpu_quota=100000)))
    print("UpdateContainerResources: ok")
    st = rt.ContainerStatus(cri.ContainerStatusRequest(container_id=cid)).status
    print("ContainerStatus:", cri.ContainerState.Name(st.state))
    rt.StopContainer(cri.StopContainerRequest(container_id=cid, timeout=1))
    st = rt.ContainerStatus(cri.ContainerStatusRequest(container_id=cid)).status
    print("StopContainer: state", cri.ContainerState.Name(st.state), "exit", st.exit_code, st.reason)
    rt.RemoveContainer(cri.RemoveContainerRequest(container_id=cid))
    rt.StopPodSandbox(cri.StopPodSandboxRequest(pod_sandbox_id=pod_id))
    rt.RemovePodSandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
    print("pod removed")


if __name__ == "__main__":
    main()
