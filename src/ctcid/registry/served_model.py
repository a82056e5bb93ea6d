"""What MLflow runs to load a registered ctcid model ("models from code"): the pyfunc class itself."""

from mlflow.models import set_model

from ctcid.registry.pyfunc import CtcClassifier

set_model(CtcClassifier())
