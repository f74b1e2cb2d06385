"""The local runtime: pods as processes in network namespaces of their own (``network``,
``process``, ``pod``), ClusterIPs (``ipam``). See docs/runtime.md."""
