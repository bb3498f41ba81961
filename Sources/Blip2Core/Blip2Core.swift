// Blip2Core
