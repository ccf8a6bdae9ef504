//! Shared fixtures for quiver integration tests.
