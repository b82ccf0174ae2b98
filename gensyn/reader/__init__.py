"""Reader study: build a blinded real-vs-synthetic study, serve it in Label Studio, analyse it."""
