"""Training the embedded small Pi0.5: the training set (``dataset``), Pi0.5's flow matching on the engine's own
network (``flow``), the prompt tokenizer, the LeRobot checkpoint writer and the loop (``train``)."""
