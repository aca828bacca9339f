-- Optuna's studies live beside MLflow's runs, in their own database.
CREATE DATABASE optuna;
