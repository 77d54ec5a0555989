"""SerialEM session metadata: mdoc parsing, discovery, acquisition order, dose, movie lookup."""
