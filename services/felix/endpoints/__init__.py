"""Kernel plumbing of pod endpoints: raw netlink, namespaces, sysctls, the veth recipe."""
