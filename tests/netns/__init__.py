"""netns tier: root and network namespaces (a package so its module names cannot clash)."""
