"""Recipes: each wires a model, a collate, a loss and metrics into the one engine."""
