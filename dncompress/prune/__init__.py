"""Channel pruning: dependency groups, criteria, masks applied to cfg and weights, compensation, refits."""
