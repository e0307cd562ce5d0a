"""Building MoE models: tokenizer, training, capacity factor, evaluation, upcycling, parameter accounting."""
