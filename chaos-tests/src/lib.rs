//! Jepsen-style chaos testing for kvstore.
