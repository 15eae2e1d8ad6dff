"""Client dialects as pure translations to and from the canonical chat request and its answer."""
