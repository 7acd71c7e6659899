lr = [0.001, 0.01, 0.1]
runs_per_point = 3
