#!/bin/sh
# Build the committed static files from the pinned npm packages (run after `npm ci`):
#   - src/idp/web/static/nhsuk/: NHS.UK frontend CSS compiled from nhsuk.scss, the images
#     the CSS and the page head refer to, and the package's MIT licence;
#   - tests/browser/vendor/: axe-core for the accessibility checks, with its MPL-2.0 licence.
# No JavaScript from nhsuk-frontend is shipped: the hosted pages work without scripts.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
nhsuk="$here/node_modules/nhsuk-frontend/dist/nhsuk"
out="$root/src/idp/web/static/nhsuk"
vendor="$root/tests/browser/vendor"

rm -rf "$out"
mkdir -p "$out/images" "$vendor"
"$here/node_modules/.bin/sass" --load-path="$here/node_modules" --style=compressed \
  --no-source-map "$here/nhsuk.scss" "$out/nhsuk.min.css"
for image in nhsuk-icon-arrow-down.svg nhsuk-icon-arrow-up-down.svg nhsuk-icon-arrow-up.svg \
  nhsuk-icon-cross.svg favicon.ico favicon.svg nhsuk-icon-180.png; do
  cp "$nhsuk/assets/images/$image" "$out/images/$image"
done
version=$(node -p "require('$here/node_modules/nhsuk-frontend/package.json').version")
{
  echo "nhsuk-frontend $version (https://github.com/nhsuk/nhsuk-frontend), built by frontend/build.sh."
  echo
  cat "$here/licences/nhsuk-frontend-LICENSE.txt"
} > "$out/LICENCE.txt"

cp "$here/node_modules/axe-core/axe.min.js" "$vendor/axe.min.js"
cp "$here/node_modules/axe-core/LICENSE" "$vendor/axe-core-LICENSE.txt"
echo "built $out and $vendor"
