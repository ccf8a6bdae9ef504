//! quiver-switch (skeleton)
