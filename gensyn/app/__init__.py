"""The application: the command line, start-up checks, help, Hydra run folders and the
launchers. Nothing in gensyn imports it (config registers its Hydra resolvers)."""
