//! CGI/1.1 (RFC 3875) rules: meta-variables, PATH_INFO split, response heads.
