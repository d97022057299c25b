"""Detection beyond a single run: consensus signals of each pair (`consensus`, `signals`), the fused classifier
(`fusion`) fitted on trusted and constructed labels (`labels`), and the `concord` method that runs them and refits
from decisions (`method`)."""
