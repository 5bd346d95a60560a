//! FastCGI 1.0 records and connection machines.
