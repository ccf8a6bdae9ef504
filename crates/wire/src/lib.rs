//! quiver-wire (skeleton)
