// Validates KEDA objects (JSON lines on stdin) against KEDA's CRD schemas, compiled in the npm
// package @kubernetes-models/keda (deploy/tools/fetch.sh installs it). Prints one JSON line per
// object: {"kind", "name", "errors"}; exits 1 when any object is invalid.
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const nodeModules = process.argv[2];
const models = await import(pathToFileURL(`${nodeModules}/@kubernetes-models/keda/keda.sh/v1alpha1/index.js`).href);
let failed = false;
for (const line of readFileSync(0, "utf8").split("\n").filter(Boolean)) {
  const object = JSON.parse(line);
  const Model = models[object.kind];
  let errors = null;
  if (!Model || object.apiVersion !== "keda.sh/v1alpha1") {
    errors = [`no KEDA model for ${object.apiVersion} ${object.kind}`];
  } else {
    try {
      new Model(object).validate();
    } catch (error) {
      errors = [String(error.message ?? error)];
    }
  }
  failed ||= errors !== null;
  console.log(JSON.stringify({ kind: object.kind, name: object.metadata?.name, errors }));
}
process.exit(failed ? 1 : 0);
