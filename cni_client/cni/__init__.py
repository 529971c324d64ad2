"""The CNI spec side of the `calico` plugin: environment, network config, results, errors.

Every module here imports only built-in modules: a runtime execs the plugin once per pod, and
start-up time is most of what an ADD costs (see cni_client/DESIGN.md).
"""
