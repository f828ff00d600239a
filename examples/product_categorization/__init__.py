"""Product categorization: put each newly created product into one category of a fixed list."""
