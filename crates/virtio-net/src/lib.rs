//! quiver-virtio-net (skeleton)
