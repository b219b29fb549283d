"""The evaluate step: EX/EM per hardness that agree with the official Spider evaluators (never imports torch)."""
