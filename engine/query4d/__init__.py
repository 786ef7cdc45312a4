"""4D language queries (4-LEGS): clips of a Gaussian sequence, video-language features lifted onto each Gaussian
per timestep, compressed by an autoencoder, and text queries answered as a spatial mask per frame and a time span."""
