//! quiver-uplink (skeleton)
