"""The stage machinery: the registry, hashed resumable run folders, the run context and
where the configs live. Imports only gensyn.base (and the trackers, and the stages package
to discover the stages)."""
