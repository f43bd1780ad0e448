"""The recipe's stages: each module declares its nodes (recipe.runner.Node) in NODES."""
