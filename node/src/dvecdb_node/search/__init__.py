"""Search scheduling: where a search runs (:mod:`.plan`), the threads that run it
(:mod:`.searcher`)."""
