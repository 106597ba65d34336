"""Ray learner side: `Learner` actor (registered objective's update, versioned weight
publishing, policy-lag bound), `WeightStore`, the streaming driver `DistributedRuntime`,
the Ray Train data-parallel entry (`train_dp`) and `driver.run_distributed` for `smart-r1 train --ray`."""
