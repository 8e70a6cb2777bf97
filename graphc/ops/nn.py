"""Neural-network ops: linear, convolution, pooling, normalisation, attention, embedding."""
