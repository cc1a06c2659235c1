"""Built-in plugins (VerneMQ's vmq_passwd and vmq_acl), enabled by default, inactive until
their file is configured."""
