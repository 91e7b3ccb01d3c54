// Validates custom resources offline against the CRDs' OpenAPI schemas, as compiled into
// the npm packages @kubernetes-models/prometheus-operator and @kubernetes-models/keda.
// stdin: a JSON array of objects; stdout: a JSON array of {kind, name, error} (empty: valid).
// Usage: OPS_NODE_MODULES=<node_modules> node validate_crs.mjs < objects.json
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const root = process.env.OPS_NODE_MODULES;
const packages = {
  "monitoring.coreos.com/v1": ["prometheus-operator", ["ServiceMonitor", "PrometheusRule", "PodMonitor"]],
  "monitoring.coreos.com/v1alpha1": ["prometheus-operator", ["AlertmanagerConfig"]],
  "keda.sh/v1alpha1": ["keda", ["ScaledObject", "TriggerAuthentication"]],
};
const models = {};
for (const [apiVersion, [pkg, kinds]] of Object.entries(packages)) {
  for (const kind of kinds) {
    const file = join(root, `@kubernetes-models/${pkg}`, apiVersion, `${kind}.js`);
    models[`${apiVersion} ${kind}`] = (await import(pathToFileURL(file).href))[kind];
  }
}
const objects = JSON.parse(readFileSync(0, "utf8"));
const problems = [];
for (const object of objects) {
  const model = models[`${object.apiVersion} ${object.kind}`];
  const name = object.metadata?.name;
  if (!model) {
    problems.push({ kind: object.kind, name, error: "no schema for this kind" });
    continue;
  }
  try {
    new model(object).validate();
  } catch (error) {
    problems.push({ kind: object.kind, name, error: String(error.message ?? error) });
  }
}
process.stdout.write(JSON.stringify(problems));
