"""The human half of the loop: which crops a person should look at next (queue), what a
sample's fractions are once some crops are known (correct), and whether a sample looks
unlike what the model was validated on (novelty). Plain numbers in, plain numbers out: the
store and the reports call these."""
