// Blip2Tokenizer
