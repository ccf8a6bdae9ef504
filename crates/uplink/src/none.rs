//! The `none` uplink: an isolated switch with no way out.

use crate::uplink::{Capabilities, Uplink, UplinkKind, UplinkQueue};

/// An uplink with zero queues: VNICs only talk to each other.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoneUplink;

impl Uplink for NoneUplink {
    fn name(&self) -> &str {
        "none"
    }

    fn kind(&self) -> UplinkKind {
        UplinkKind::None
    }

    fn num_queues(&self) -> usize {
        0
    }

    fn queue(&self, _index: usize) -> Option<&dyn UplinkQueue> {
        None
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    fn ifname(&self) -> Option<&str> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_has_no_queues_and_no_capabilities() {
        let up: &dyn Uplink = &NoneUplink;
        assert_eq!(up.kind(), UplinkKind::None);
        assert_eq!(up.num_queues(), 0);
        assert!(up.queue(0).is_none());
        assert_eq!(up.capabilities(), Capabilities::default());
        assert_eq!(up.ifname(), None);
        assert_eq!(up.name(), "none");
    }
}
