// Package pkgdoc holds one test: every package of the module has a package
// doc comment that says what it is for (STYLE: "a test can check that none
// is missing").
package pkgdoc
