"""Every figure camvis draws (matplotlib only, Agg backend, PNG written atomically)."""
