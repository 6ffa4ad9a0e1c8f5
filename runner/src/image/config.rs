//! The image's config (the `config` object of the OCI image configuration): what a container
//! started from the image runs, and how. docs/images.md says how each field meets the policy and
//! the command line.

use std::collections::BTreeMap;

use oci_spec::image::ImageConfiguration;
use serde::{Deserialize, Serialize};

/// The fields of an image's config that make a process, and those `inspect` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// `KEY=value` pairs, in order (a later duplicate wins).
    pub env: Vec<(String, String)>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// Absolute; `None` means `/`.
    pub working_dir: Option<String>,
    /// `uid`, `uid:gid`, `name` or `name:group` as the image says it.
    pub user: Option<String>,
    /// Mount points the image expects storage at (`inspect` only: hybox mounts only what `-v`
    /// or the policy names).
    pub volumes: Vec<String>,
    /// `port/proto` (`inspect` only: a sandbox has no network but loopback).
    pub exposed_ports: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub architecture: String,
    pub os: String,
}

/// A user as the image or `--user` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum User {
    Id {
        uid: u32,
        gid: Option<u32>,
    },
    /// A name (and maybe a group name) to look up in the image's /etc/passwd and /etc/group.
    Name {
        user: String,
        group: Option<String>,
    },
}

impl User {
    pub fn parse(s: &str) -> User {
        let (u, g) = match s.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (s, None),
        };
        match (u.parse::<u32>(), g.map(|g| g.parse::<u32>())) {
            (Ok(uid), None) => User::Id { uid, gid: None },
            (Ok(uid), Some(Ok(gid))) => User::Id {
                uid,
                gid: Some(gid),
            },
            _ => User::Name {
                user: u.to_string(),
                group: g.map(str::to_string),
            },
        }
    }
}

impl ImageConfig {
    pub fn from_oci(c: &ImageConfiguration) -> ImageConfig {
        let mut out = ImageConfig {
            architecture: c.architecture().to_string(),
            os: c.os().to_string(),
            ..ImageConfig::default()
        };
        let Some(cfg) = c.config() else {
            return out;
        };
        let list = |v: &Option<Vec<String>>| v.clone().unwrap_or_default();
        out.env = list(cfg.env())
            .into_iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (kv, String::new()),
            })
            .collect();
        out.entrypoint = list(cfg.entrypoint());
        out.cmd = list(cfg.cmd());
        out.working_dir = cfg.working_dir().clone().filter(|w| !w.is_empty());
        out.user = cfg.user().clone().filter(|u| !u.is_empty());
        out.volumes = list(cfg.volumes());
        out.exposed_ports = list(cfg.exposed_ports());
        out.labels = cfg
            .labels()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        out
    }

    /// The command the image runs with `args` from the command line: the entrypoint, then `args`
    /// if any, else the image's `Cmd` (as `docker run IMAGE ARGS` replaces `CMD`).
    pub fn command(&self, args: &[String]) -> Vec<String> {
        let mut argv = self.entrypoint.clone();
        if args.is_empty() {
            argv.extend(self.cmd.iter().cloned());
        } else {
            argv.extend(args.iter().cloned());
        }
        argv
    }

    /// The image's `PATH`, or the one Docker and containerd use when an image sets none.
    pub fn path(&self) -> String {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| {
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_fields_are_read() {
        let json = r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},
          "config":{"Env":["PATH=/bin","A=1=2"],"Entrypoint":["/e"],"Cmd":["c"],"WorkingDir":"/w",
          "User":"7:8","Volumes":{"/data":{}},"ExposedPorts":{"80/tcp":{}}}}"#;
        let c = ImageConfiguration::from_reader(json.as_bytes()).unwrap();
        let c = ImageConfig::from_oci(&c);
        assert_eq!(
            c.env,
            vec![("PATH".into(), "/bin".into()), ("A".into(), "1=2".into())]
        );
        assert_eq!(c.command(&[]), vec!["/e", "c"]);
        assert_eq!(c.command(&["x".into()]), vec!["/e", "x"]);
        assert_eq!(c.working_dir.as_deref(), Some("/w"));
        assert_eq!(
            User::parse(c.user.as_deref().unwrap()),
            User::Id {
                uid: 7,
                gid: Some(8)
            }
        );
        assert_eq!(c.volumes, vec!["/data"]);
        assert_eq!(c.exposed_ports, vec!["80/tcp"]);
        assert_eq!(c.path(), "/bin");
    }
}
