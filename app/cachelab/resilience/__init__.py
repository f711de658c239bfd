"""Generic resilience patterns, with no cache rules in them: a circuit breaker,
a bulkhead, single flight (request collapsing) and a bounded pool of
background jobs, one per key. The cache engine (:mod:`cachelab.engine`)
composes them."""
