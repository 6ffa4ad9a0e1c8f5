//! The network: no interface but lo, no route, the host's loopback listeners unreachable.

use super::{attack, case, Case, Control, Expect, HostCheck, NATIVE, WASM, WASM_BOTH};
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
}
