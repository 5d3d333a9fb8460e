"""HTTP and blob-trigger functions: parse, call imagerag or start orchestrations, respond."""
