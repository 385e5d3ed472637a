"""One module per task family; ``envs.registry`` names them."""
