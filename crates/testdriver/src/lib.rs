//! quiver-testdriver (skeleton)
