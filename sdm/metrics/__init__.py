"""Sample-quality metrics. Every figure carries the name of the feature extractor that made it."""
