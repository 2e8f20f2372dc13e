// ESLint flat config: typescript-eslint's recommended rules over every TypeScript and JavaScript source.
// `npm run lint` runs it; `npm test` runs it after the typecheck.
import js from "@eslint/js";
import tseslint from "typescript-eslint";
import globals from "globals";

export default tseslint.config(
  // Other branches may still carry disable comments for rules this set does not enable.
  { linterOptions: { reportUnusedDisableDirectives: "off" } },
  { ignores: ["**/node_modules/", "**/dist/", "bench/results/", "test-artifacts/", "test/clients/", "data/"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { ...globals.node } },
    rules: {
      // Unused bindings are already errors in tsc (noUnusedLocals/Parameters); `_`-prefixed ones are deliberate.
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_", caughtErrors: "none" }],
      // A `let` that a closure reads before its one assignment (e.g. a request a timeout may abort) stays `let`.
      "prefer-const": ["error", { ignoreReadBeforeAssign: true }],
    },
  },
  {
    // The paywall page's script runs in the browser.
    files: ["lib/src/adapters/express/paywall-page/*.js", "example-server/web/**"],
    languageOptions: { globals: { ...globals.browser } },
  },
  {
    // Tests, benchmarks and experiment scripts poke at untyped wire answers and third-party libraries; `any` there is the honest type.
    files: ["test/**", "bench/**", "scripts/**"],
    rules: {
      "@typescript-eslint/no-explicit-any": "off",
      "@typescript-eslint/no-non-null-asserted-optional-chain": "off",
    },
  },
);
