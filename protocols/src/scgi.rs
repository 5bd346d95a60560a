//! SCGI netstring requests.
