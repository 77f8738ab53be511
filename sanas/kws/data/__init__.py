"""Audio in, labelled examples and sequences out: Speech Commands, synthetic speech, streams
of words with their labels, and the log-mel / MFCC front end."""
