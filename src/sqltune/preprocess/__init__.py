"""The preprocess step: Spider / BIRD / CoSQL / SParC into instruction records with the schema spelled out."""
