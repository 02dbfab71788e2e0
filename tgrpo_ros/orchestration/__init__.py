"""Process orchestration: the node graph, the launcher, private network namespaces."""
