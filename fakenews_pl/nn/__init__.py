"""The network as plain torch modules, without Lightning: `net.FakeNewsNet` (the one place
layers are built), its sequence encoders, its dense head and the table optimizers."""
