//! The network: no interface but lo, no route, the host's loopback listeners unreachable.

use serde_json::json;

use super::{
    attack, case, policy, Case, Control, Expect, Guest, HostCheck, Target, NATIVE, WASM, WASM_BOTH,
};
use crate::conformance::fixtures::Fixtures;

/// Network: no interface but lo, no route, the host's loopback listeners unreachable.
pub(super) fn cases(fx: &Fixtures, out: &mut Vec<Case>) {
    out.push(case(
        "net_view",
        "network: no interface but lo, no route out (/proc/net/dev, /proc/net/route)",
        NATIVE,
        Vec::new(),
        Expect::NetView,
        Control::ViewDiffers,
    ));
    out.push(case(
        "net_view",
        "network: no interface visible (no /proc/net in WASI)",
        WASM,
        attack(&["read", "/proc/net/dev"]),
        Expect::Refused,
        Control::Succeeds(attack(&["read", "/proc/net/dev"])),
    ));
    let port = fx.port();
    for backends in [NATIVE, WASM_BOTH] {
        let mut c = case(
            "connect_host_loopback",
            "network: connect to a listener on the host's loopback",
            backends,
            attack(&["connect", &port]),
            if backends == NATIVE {
                Expect::Errno(&["EACCES", "ENETUNREACH"])
            } else {
                Expect::Refused
            },
            Control::Succeeds(attack(&["connect", &port])),
        );
        c.host_check = Some(HostCheck::TcpListenerIdle);
        out.push(c);
    }
    let free = fx.free_port.to_string();
    for backends in [NATIVE, WASM] {
        out.push(case(
            "bind_port",
            "network: bind a port the policy forbids (network none)",
            backends,
            attack(&["bind", &free]),
            if backends == NATIVE {
                Expect::Errno(&["EACCES"])
            } else {
                Expect::Refused
            },
            Control::Succeeds(attack(&["bind", &free])),
        ));
    }
    let mut c = case(
        "abstract_unix",
        "privilege: connect to a host abstract unix socket",
        NATIVE,
        attack(&["abstract", &fx.abstract_name]),
        Expect::Errno(&["ECONNREFUSED", "EPERM"]),
        Control::Succeeds(attack(&["abstract", &fx.abstract_name])),
    );
    c.host_check = Some(HostCheck::AbstractSocketIdle);
    out.push(c);
    loopback(fx, out);
}

/// Every backend, the wasm one as a component (WASI preview 2 has sockets; a preview 1 module none).
const ALL: &[Target] = &[Target::Native, Target::Wasm, Target::WasmOsSandbox];

/// `network: loopback` means the same on every backend: the guest's own `lo`, nothing of the
/// host's. It can talk to itself, even on a port a host service holds on the host's loopback, and
/// reaches none of the host's loopback services: TCP, UDP, abstract unix sockets.
fn loopback(fx: &Fixtures, out: &mut Vec<Case>) {
    let port = fx.port();
    let udp = fx.udp_port();
    let under_loopback = |mut c: Case| {
        c.guest = Guest::Component("probe");
        c.policy = policy(json!({"network": "loopback"}));
        c
    };
    out.push(under_loopback(case(
        "loopback_is_own",
        "network loopback: talk to itself on 127.0.0.1, on the port the host's listener holds",
        ALL,
        attack(&["loopback_echo", &port]),
        Expect::Succeeds,
        // Bare on the host the port is taken: EADDRINUSE.
        Control::ReachesKernel(attack(&["loopback_echo", &port])),
    )));
    let mut c = under_loopback(case(
        "loopback_host_tcp",
        "network loopback: connect to a listener on the host's loopback",
        ALL,
        attack(&["connect", &port]),
        Expect::Refused,
        Control::Succeeds(attack(&["connect", &port])),
    ));
    c.host_check = Some(HostCheck::TcpListenerIdle);
    out.push(c);
    let mut c = under_loopback(case(
        "loopback_host_udp",
        "network loopback: send a UDP datagram to a socket on the host's loopback",
        ALL,
        attack(&["udp_send", &udp]),
        Expect::Finishes,
        Control::Succeeds(attack(&["udp_send", &udp])),
    ));
    c.host_check = Some(HostCheck::UdpSocketIdle);
    out.push(c);
    // WASI has no unix sockets at all: native only.
    let mut c = under_loopback(case(
        "loopback_host_abstract",
        "network loopback: connect to a host abstract unix socket",
        NATIVE,
        attack(&["abstract", &fx.abstract_name]),
        Expect::Errno(&["ECONNREFUSED", "EPERM"]),
        Control::Succeeds(attack(&["abstract", &fx.abstract_name])),
    ));
    c.host_check = Some(HostCheck::AbstractSocketIdle);
    out.push(c);
}
