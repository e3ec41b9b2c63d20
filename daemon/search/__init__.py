"""Cross-media search: every moment of every stream described in words, indexed, and asked."""
